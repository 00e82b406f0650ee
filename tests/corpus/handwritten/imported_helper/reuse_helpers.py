# Hand-written for kvaudit: helpers imported by imported_helper/press.py (no press here).
"""Leader test and selection, in a module of their own."""


def leads(layer: int, every: int) -> bool:
    return layer % every == 0


def select(press, module, hidden_states, keys, values, attentions, kwargs):
    scores = press.press.score(module, hidden_states, keys, values, attentions, kwargs)
    press.kept = scores.topk(keys.shape[2] // 2, dim=-1).indices
