"""The admin web UI at /admin: a second adapter beside `web/` over the same services.

Server-rendered (aiohttp-jinja2), in Brazilian Portuguese and English, usable without
JavaScript. `routes.py` is its URL table, `middleware.py` its session, CSRF, role and
security-header checks, `i18n.py` its message catalog (`messages/*.yaml`), and one module per
page family (triggers, mappings, deliveries, ...) holds thin handlers that call the use
cases through `services_of(request)`, exactly as the JSON API does.
"""
