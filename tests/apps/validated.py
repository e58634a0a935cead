"""The basic test app wrapped in wsgiref's validator: any PEP 3333 violation by the server raises."""

import os
import sys
from wsgiref.validate import validator

sys.path.insert(0, os.path.dirname(__file__))
from basic import application as _basic  # noqa: E402

application = validator(_basic)
