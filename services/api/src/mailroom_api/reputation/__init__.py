"""The reputation guard (issue 22): a tenant's hard-bounce and complaint rates over its last live
sends, shown to the operator and, past a threshold, pausing the tenant (evaluated by the email log
projector on a newly recorded live hard bounce or complaint only)."""
