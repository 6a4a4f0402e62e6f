"""The parts of Information Emergence (:func:`emergence_fast.emergence.information_emergence`), one concern each.

``inputs`` (ids under the BOS policy, model facts), ``plan`` (the state that fits the memory
budget), ``macro`` (the streaming pass), ``micro`` (tokens fed alone), ``checkpoint``,
``estimate`` (the estimator families on those states), ``notes`` and ``result`` (:class:`IEResult`).
"""
