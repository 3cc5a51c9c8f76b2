"""What a cache of the teacher's top-k outputs can give the objective, checked before any weights load and again by
`distil.modules.cached_teacher.CachedTeacherDistillation`: the forward KL on the top-k support plus a tail bucket,
the label term, and the cosine term when the cache holds hidden states; not the terms that need the teacher's full
logits or internals."""

from __future__ import annotations

NOT_FROM_CACHE = {  # keys whose terms need the live teacher, and the value they must have with a cache
    "alpha_mse": 0.0,
    "alpha_hidden_mse": 0.0,
    "alpha_attention": 0.0,
    "alpha_relation": 0.0,
    "divergence": "forward_kl",
}


def check_cached_objective(settings: dict, has_hidden: bool, directory, extra_terms=()) -> None:
    """Refuse, naming the key, what a cache of top-k outputs cannot give (module docstring)."""
    for key, allowed in NOT_FROM_CACHE.items():
        value = settings.get(key, allowed)
        if value != allowed and not (isinstance(allowed, float) and value == 0):
            raise ValueError(
                f"distill.{key}={value!r} needs the teacher's full outputs, which "
                f"distill.teacher_cache={str(directory)!r} does not hold: set distill.{key}={allowed} or train with "
                "distill.teacher_cache=null"
            )
    if settings.get("alpha_cos", 0) > 0 and not has_hidden:
        raise ValueError(
            f"distill.alpha_cos={settings['alpha_cos']} needs the teacher's hidden states, and "
            f"distill.teacher_cache={str(directory)!r} holds none: set distill.alpha_cos=0 or write the cache with "
            "hidden_states=true"
        )
    if any(term.needs_teacher for term in extra_terms):
        raise ValueError("distill.extra_terms on the teacher's logits cannot run from distill.teacher_cache")
