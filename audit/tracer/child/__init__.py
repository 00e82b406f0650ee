"""What runs in a forked worker child: the user's code, and the instrumented runs of one press.

* :mod:`.jobs`: the two jobs a child does (list a target's classes, trace one press or its reference);
* :mod:`.build`: building the press (defaults, ``--press``, the reference press);
* :mod:`.settings`: how kvpress's own presses are built and run (``rules/presses.toml``);
* :mod:`.standins`: seeded stand-ins for the learned files some presses load from the Hugging Face Hub;
* :mod:`.runner`: the grid of runs, prefill and decoding steps, defects, the claims' checks;
* :mod:`.instrument`, :mod:`.keptindices`: score()/compress() calls, the cache before and after;
* :mod:`.claimcheck`: which claims a press is held to, and their checks;
* :mod:`.timing`: repeated timings of compared presses; :mod:`.loader`: importing the target.
"""
