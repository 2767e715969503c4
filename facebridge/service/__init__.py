"""The HTTP service around the library: everything a request meets before and after a route.

- app.py         create_app(): the FastAPI factory (routers from facebridge/api, middleware, handlers)
- state.py       what the running service holds: models, maps, cohorts, the pair store, readiness
- middleware.py  request id, access log, body and in-flight limits, per-key limits, time budget, metrics
- security.py    API keys and their scopes on requests (the keys file's format is facebridge/keyfile.py)
- errors.py      RFC 9457 problem+json answers (the table of problem types: facebridge/problems.py)
- recording.py   the pair store from a request (POST /pairs, /embed with `record`)

The library (facebridge.bridge, mapping/, vision/, cohort/) imports nothing from here.
"""
