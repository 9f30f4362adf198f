"""A plugin that only --plugin loads (conftest does not): its names must resolve in every command all the same."""

from outside_mechanism import OutsideReluAttention

from models.attention import register_attention


@register_attention("late-relu", configs={"late-relu": {}, "late-relu-eps3": {"eps": 1e-3}})
class LateReluAttention(OutsideReluAttention):
    def __init__(self, dim, heads, *, causal=False, max_len=None, dropout=0.0, eps: float = 1e-6):
        super().__init__(dim, heads, causal=causal, max_len=max_len, dropout=dropout)
        self.eps = eps
