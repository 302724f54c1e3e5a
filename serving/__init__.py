"""BentoML services of Stillhouse (installed as ``stillhouse.serving``): one per task (each with exactly its task's
route and /feedback), the chain, the front and model services they share, and the security middleware (the ASGI
adapter of ``stillhouse.serve.policy``). Thin adapters over ``stillhouse.serve`` and each task's ``requests`` module.

Importing the package is what makes a process a serving process, also under a plain ``bentoml serve``: BentoML's
usage telemetry is turned off (a served student reports nothing outside the deployment) and every log record goes
through Stillhouse's log hygiene (``stillhouse.serve.logs``). ``stillhouse serve`` does more around BentoML
(``stillhouse.serve.supervisor``).
"""

import os

from stillhouse.serve.logs import install_log_hygiene

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
install_log_hygiene()
