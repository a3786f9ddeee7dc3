"""The operator's view of the sending governor (issue 23): `GET /admin/v1/sending`."""
