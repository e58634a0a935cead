"""wsgistack: a production WSGI serving stack (application server + front) in one package."""

__version__ = "0.1.0"
