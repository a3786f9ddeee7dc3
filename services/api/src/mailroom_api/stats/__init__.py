"""Delivery stats (`GET /v1/stats`): hourly rollups kept by the email log projector (issue 22)."""
