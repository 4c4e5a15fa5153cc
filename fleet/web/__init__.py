"""The operator dashboard: server-rendered pages (Jinja2) with small ES modules, served by Fleet.

`fleet.web.site.mount_web(app)` adds it to an app; the browser code lives in `web/` and is bundled
into `fleet/web/static/dist/` by `npm run build`.
"""
