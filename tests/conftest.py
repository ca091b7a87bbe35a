import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# CI runs the properties on hypothesis's fixed (derandomized) examples so a run is reproducible; locally
# every run explores new examples.
import os  # noqa: E402

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
