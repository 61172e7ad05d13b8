"""The HTTP service (DESIGN.md 3.3): ``odeformer serve`` runs :func:`service.app.create_app` under uvicorn."""
