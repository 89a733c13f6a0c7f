"""The REST API's contract: every query string, path, body and answer, declared once.

flask-openapi3 validates each request against these pydantic models before the view runs and
writes /api/openapi.json from them; `web.contract` turns a validation failure into the API's
error answer. The services still check what only they can know (a number opted out, a setting
missing); the models check shape, type and range.

base: the model classes and shared field types; requests: query strings, paths and bodies;
answers: what the API returns.
"""
