"""The demo's pages: a template page with a SQLite query, and small APIs the tests exercise."""

import hashlib
import json
import time

from django.http import HttpResponseNotAllowed, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

from pages.models import Visit


def index(request):
    if request.GET.get("record") == "1":
        Visit.objects.create(path=request.path)
    recent = list(Visit.objects.order_by("-id")[:10])
    return render(request, "pages/index.html", {"recent": recent, "count": Visit.objects.count()})


@csrf_exempt
def echo(request):
    body = request.body      # first: Django refuses .body once request.POST has read a multipart stream
    return JsonResponse({
        "method": request.method,
        "path": request.path,
        "query": dict(request.GET.lists()),
        "form": dict(request.POST.lists()) if request.content_type != "application/json" else {},
        "json": json.loads(body or b"null") if request.content_type == "application/json" else None,
        "cookies": request.COOKIES,
        "remote_addr": request.META.get("REMOTE_ADDR"),
        "scheme": request.scheme,
        "host": request.get_host(),
        "body_length": len(body),
    })


@csrf_exempt
def upload(request):
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    data = request.body
    return JsonResponse({"length": len(data), "sha256": hashlib.sha256(data).hexdigest()})


def stream(request):
    count = int(request.GET.get("n", "5"))
    delay = float(request.GET.get("delay", "0.2"))

    def chunks():
        for index in range(count):
            time.sleep(delay)
            yield f"chunk {index}\n"

    response = StreamingHttpResponse(chunks(), content_type="text/plain")
    # Behind nginx each chunk must go out as produced: its uwsgi module otherwise buffers a body of unknown length.
    response["X-Accel-Buffering"] = "no"
    return response
