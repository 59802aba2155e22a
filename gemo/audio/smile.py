"""openSMILE extractors, built through one function; importing this module warms openSMILE up.

The first ``opensmile.Smile`` of a process takes 0.75 s: audobject, which opensmile
serialises its settings with, maps every installed module to its distribution
(``importlib.metadata.packages_distributions``, about 29,000 paths here) and keeps
the map for the process. The workers' fork server imports this module, so the map is
made once there and every worker forked from it inherits it, instead of each worker
spending that time at start-up.

>>> smile = create("eGeMAPSv02", "Functionals")   # doctest: +SKIP
>>> smile.process_signal(signal, 16000)            # doctest: +SKIP
"""

import opensmile


def create(feature_set, feature_level):
    """An ``opensmile.Smile`` for the names of ``opensmile.FeatureSet`` and ``FeatureLevel``."""
    return opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, feature_set),
                           feature_level=getattr(opensmile.FeatureLevel, feature_level))


create("eGeMAPSv02", "Functionals")  # the warm-up described above
