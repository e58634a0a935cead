from django.urls import path

from pages import views

urlpatterns = [
    path("", views.index, name="index"),
    path("api/echo", views.echo, name="echo"),
    path("api/upload", views.upload, name="upload"),
    path("api/stream", views.stream, name="stream"),
]
