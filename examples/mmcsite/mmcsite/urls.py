from django.urls import path, re_path
from django.views.static import serve

from pages import views

urlpatterns = [
    path("", views.index, name="index"),
    path("api/echo", views.echo, name="echo"),
    path("api/upload", views.upload, name="upload"),
    path("api/stream", views.stream, name="stream"),
    # Static files through Django until wsgistack's front serves them (--static-map).
    re_path(r"^static/(?P<path>.*)$", serve, {"document_root": "static"}),
]
