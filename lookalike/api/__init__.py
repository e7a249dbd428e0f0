"""The HTTP search service: a FastAPI app over the Catalog facade, plus the web page at ``/``.

from lookalike.api.app import create_app, serve
app = create_app(db="shop.db")        # an ASGI app (uvicorn, TestClient)
serve(db="shop.db", port=8000)        # blocking: run it on uvicorn
"""
