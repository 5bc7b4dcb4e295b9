"""`genguard serve`: the HTTP service (FastAPI).

Modules: `app` (the app factory, request ids, JSON logs, errors), `auth` (API keys and roles),
`jobs` (the job queue's in-process workers), `routes_*` (the endpoints), `schemas` (request and
response models). Loading this package loads guard and audit only: the model is loaded by a worker,
on its first job.
"""
