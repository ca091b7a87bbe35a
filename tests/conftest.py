import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# CI runs the properties on hypothesis's fixed (derandomized) examples so a run is reproducible; locally
# every run explores new examples.
import os  # noqa: E402

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True)
# Bug hunting: HYPOTHESIS_PROFILE=hunt runs every property on HYPOTHESIS_HUNT_FACTOR (default 5) times its own
# max_examples, with fresh examples (a property's own @settings would otherwise override a profile's count).
settings.register_profile("hunt", deadline=None)
HUNT_FACTOR = int(os.environ.get("HYPOTHESIS_HUNT_FACTOR", "5"))

if os.environ.get("CI"):
    settings.load_profile("ci")
elif os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])


def pytest_collection_modifyitems(config, items):
    if os.environ.get("HYPOTHESIS_PROFILE") != "hunt" or os.environ.get("CI"):
        return
    seen = set()
    for item in items:
        test = getattr(getattr(item, "obj", None), "__func__", getattr(item, "obj", None))
        own = getattr(test, "_hypothesis_internal_use_settings", None)
        if own is None or id(test) in seen:
            continue
        seen.add(id(test))
        test._hypothesis_internal_use_settings = settings(own, max_examples=own.max_examples * HUNT_FACTOR,
                                                          deadline=None)
