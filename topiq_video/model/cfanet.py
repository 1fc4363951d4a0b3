"""CFANet, the network behind TOPIQ (Chen et al., "TOPIQ: A Top-down Approach from Semantics
to Distortions for Image Quality Assessment", IEEE TIP 2024), for NR and FR assessment.

The module layout (names and shapes of every state_dict entry) matches the published TOPIQ
ResNet50 checkpoints, whose files hold ``{"params": state_dict}``, so they load with
``strict=True``. Nothing here downloads or reads files: see :func:`load_cfanet_state_dict`
and :func:`cfanet_from_state_dict` to put weights into a model, both checked by
:func:`check_cfanet_state_dict`, the one place that validates CFANet weights.

Data flow for one image (RGB in [0, 1]):

1. ImageNet normalisation, ResNet50 features at five levels (strides 2, 4, 8, 16, 32).
2. Per level, gated local pooling (NR: gated conv; FR: dist/ref/distance features weighted
   by a small conv net on the distance), average pooling down to the top level's grid,
   1x1 projection to 256 channels, learned positional embedding, one self-attention layer.
3. Coarse-to-fine cross-scale attention: the coarser result queries the next finer level.
4. One more self-attention layer, mean over tokens, MLP head -> one score per image.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from topiq_video.errors import InvalidInputError, WeightsError

logger = logging.getLogger(__name__)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
BACKBONE_CHANNELS: tuple[int, ...] = (64, 256, 512, 1024, 2048)
EMBED_DIM = 256
NUM_HEADS = 4
FFN_DIM = 1024
DROPOUT = 0.1
POS_EMB_GRID = 32
GATE_HIDDEN = 64
DISTANCE_EPS = 1e-12
POS_CACHE_SIZE = 16
_ERROR_KEY_LIMIT = 5


class MultiheadAttention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameter layout, computed with
    ``scaled_dot_product_attention`` (fused kernels on GPU). Tokens are batch-first (N, L, E).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        return x.view(n, length, self.num_heads, self.dim // self.num_heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor) -> torch.Tensor:
        """Attend from ``query`` (N, Lq, E) to ``key_value`` (N, Lk, E)."""
        if query is key_value:
            q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            w_q, w_kv = self.in_proj_weight.split((self.dim, 2 * self.dim))
            b_q, b_kv = self.in_proj_bias.split((self.dim, 2 * self.dim))
            q = F.linear(query, w_q, b_q)
            k, v = F.linear(key_value, w_kv, b_kv).chunk(2, dim=-1)
        out = F.scaled_dot_product_attention(
            self._heads(q),
            self._heads(k),
            self._heads(v),
            dropout_p=self.dropout if self.training else 0.0,
        )
        n, _, length, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(n, length, self.dim))


def _ffn(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # Feed-forward of a layer that owns linear1/linear2 directly (checkpoint key names).
    return layer.linear2(layer.dropout(F.gelu(layer.linear1(x))))


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer: self-attention then feed-forward, both residual."""

    def __init__(
        self, dim: int = EMBED_DIM, num_heads: int = NUM_HEADS, ffn_dim: int = FFN_DIM
    ) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(dim, num_heads, DROPOUT)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(DROPOUT)
        self.dropout1 = nn.Dropout(DROPOUT)
        self.dropout2 = nn.Dropout(DROPOUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.dropout1(self.self_attn(h, h))
        return x + self.dropout2(_ffn(self, self.norm2(x)))


class DecoderLayer(nn.Module):
    """Pre-norm cross-attention layer: the query attends to normalised memory, then feed-forward.

    ``self_attn`` exists only because the published checkpoints carry its weights; like the
    reference, the forward pass never uses it.
    """

    def __init__(
        self, dim: int = EMBED_DIM, num_heads: int = NUM_HEADS, ffn_dim: int = FFN_DIM
    ) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(dim, num_heads, DROPOUT)
        self.multihead_attn = MultiheadAttention(dim, num_heads, DROPOUT)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(DROPOUT)
        self.dropout2 = nn.Dropout(DROPOUT)
        self.dropout3 = nn.Dropout(DROPOUT)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        attended = self.multihead_attn(self.norm1(query), self.norm2(memory))
        query = query + self.dropout2(attended)
        return query + self.dropout3(_ffn(self, self.norm3(query)))


class EncoderStack(nn.Module):
    """A sequence of :class:`EncoderLayer` (one in CFANet), stored as ``layers.<i>``."""

    def __init__(self, num_layers: int = 1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer() for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class DecoderStack(nn.Module):
    """A sequence of :class:`DecoderLayer` (one in CFANet), stored as ``layers.<i>``."""

    def __init__(self, num_layers: int = 1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer() for _ in range(num_layers))

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            query = layer(query, memory)
        return query


def _spatial_gate(in_channels: int) -> nn.Sequential:
    """Conv net mapping a feature map to a per-pixel weight in (0, 1) (1x1, 3x3, 3x3 convs)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, GATE_HIDDEN, 1),
        nn.GELU(),
        nn.Conv2d(GATE_HIDDEN, GATE_HIDDEN, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(GATE_HIDDEN, 1, 3, padding=1),
        nn.Sigmoid(),
    )


class GatedConv(nn.Module):
    """NR gated local pooling: a 1x1 conv splits into content (GELU) and gate halves."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.splitconv = nn.Conv2d(channels, 2 * channels, 1)
        self.weight_blk = _spatial_gate(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        content, gate = self.splitconv(x).chunk(2, dim=1)
        return F.gelu(content) * self.weight_blk(gate)


class ResNet50Features(nn.Module):
    """torchvision ResNet50 trunk (no avgpool/fc) returning five feature levels."""

    def __init__(self) -> None:
        super().__init__()
        trunk = torchvision.models.resnet50(weights=None)
        self.conv1 = trunk.conv1
        self.bn1 = trunk.bn1
        self.relu = trunk.relu
        self.maxpool = trunk.maxpool
        self.layer1 = trunk.layer1
        self.layer2 = trunk.layer2
        self.layer3 = trunk.layer3
        self.layer4 = trunk.layer4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))
        c2 = self.layer1(self.maxpool(stem))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return [stem, c2, c3, c4, self.layer4(c4)]


class CFANet(nn.Module):
    """TOPIQ's CFANet with a ResNet50 backbone, NR (``use_ref=False``) or FR (``use_ref=True``).

    The constructor only builds the network (random init); load published weights with
    :func:`load_cfanet_state_dict`. ``forward`` takes RGB in [0, 1] of shape (N, 3, H, W) at any
    size and returns one score per image, shape (N,).
    """

    def __init__(self, use_ref: bool) -> None:
        super().__init__()
        self.use_ref = use_ref
        fusion = 3 if use_ref else 1
        self.semantic_model = ResNet50Features()
        self.h_emb = nn.Parameter(torch.empty(1, EMBED_DIM // 2, POS_EMB_GRID, 1))
        self.w_emb = nn.Parameter(torch.empty(1, EMBED_DIM // 2, 1, POS_EMB_GRID))
        # Registration order reproduces the official files' key order.
        self.sa_attn_blks = nn.ModuleList(EncoderStack() for _ in BACKBONE_CHANNELS)
        self.dim_reduce = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c * fusion, EMBED_DIM, 1), nn.GELU()) for c in BACKBONE_CHANNELS
        )
        self.weight_pool = nn.ModuleList(
            _spatial_gate(c) if use_ref else GatedConv(c) for c in BACKBONE_CHANNELS
        )
        self.attn_blks = nn.ModuleList(DecoderStack() for _ in BACKBONE_CHANNELS[1:])
        self.attn_pool = EncoderLayer()
        self.score_linear = nn.Sequential(
            nn.LayerNorm(EMBED_DIM),
            nn.Linear(EMBED_DIM, EMBED_DIM),
            nn.GELU(),
            nn.LayerNorm(EMBED_DIM),
            nn.Linear(EMBED_DIM, EMBED_DIM),
            nn.GELU(),
            nn.Linear(EMBED_DIM, 1),
        )
        # Resized positional embeddings per (h, w); validated against the parameters' identity,
        # version, device and dtype so loading weights or moving the model invalidates them.
        self._pos_cache: dict[tuple[int, int], tuple[tuple, torch.Tensor]] = {}
        self._init_weights()

    def _init_weights(self) -> None:
        # Mirrors the reference's training-from-scratch init (the published weights replace it).
        nn.init.trunc_normal_(self.h_emb, std=0.02)
        nn.init.trunc_normal_(self.w_emb, std=0.02)
        for part in (self.dim_reduce, self.sa_attn_blks, self.attn_blks, self.attn_pool):
            for module in part.modules():
                if isinstance(module, nn.Linear):
                    nn.init.kaiming_normal_(module.weight)
                    nn.init.zeros_(module.bias)

    def train(self, mode: bool = True) -> CFANet:
        """Like ``nn.Module.train``, but the backbone's batch norms stay frozen in eval mode."""
        super().train(mode)
        for module in self.semantic_model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    def _positional_embedding(self, h: int, w: int) -> torch.Tensor:
        """The learned (256, 32, 32) embedding resized (bicubic) to (h, w), as (1, h*w, 256)."""
        # No cache while training the embedding (it needs the graph), nor for inference-mode
        # parameters, which have no version counter to detect in-place updates with.
        cacheable = not (torch.is_grad_enabled() and self.h_emb.requires_grad) and not (
            self.h_emb.is_inference() or self.w_emb.is_inference()
        )
        stamp = (
            (
                self.h_emb.device,
                self.h_emb.dtype,
                self.h_emb.data_ptr(),
                self.w_emb.data_ptr(),
                self.h_emb._version,
                self.w_emb._version,
            )
            if cacheable
            else ()
        )
        if cacheable:
            hit = self._pos_cache.get((h, w))
            if hit is not None and hit[0] == stamp:
                return hit[1]
        grid = torch.cat(
            (
                self.h_emb.expand(-1, -1, -1, POS_EMB_GRID),
                self.w_emb.expand(-1, -1, POS_EMB_GRID, -1),
            ),
            dim=1,
        )
        emb = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        emb = emb.flatten(2).transpose(1, 2)
        if cacheable:
            if len(self._pos_cache) >= POS_CACHE_SIZE:
                self._pos_cache.pop(next(iter(self._pos_cache)))
            self._pos_cache[(h, w)] = (stamp, emb.detach())
        return emb

    def _check_inputs(self, dist: torch.Tensor, ref: torch.Tensor | None) -> None:
        if dist.ndim != 4 or dist.shape[1] != 3:
            raise InvalidInputError(
                f"CFANet expects RGB images shaped (N, 3, H, W); got {tuple(dist.shape)}. "
                "Add a batch dimension and put channels first."
            )
        if self.use_ref:
            if ref is None:
                raise InvalidInputError(
                    "This is a full-reference (FR) model: pass the reference frames as `ref`."
                )
            if ref.shape != dist.shape:
                raise InvalidInputError(
                    f"Distorted {tuple(dist.shape)} and reference {tuple(ref.shape)} shapes "
                    "differ; resize or crop them to the same size first."
                )
        elif ref is not None:
            raise InvalidInputError(
                "This is a no-reference (NR) model: call it without `ref`, or build an FR model."
            )

    def backbone_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's multi-scale features of RGB images in [0, 1] (N, 3, H, W).

        For a full-reference model, the reference's features depend on the reference alone:
        compute them once and pass them as ``ref_features`` to score several encodes."""
        mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return list(self.semantic_model((images - mean) / std))

    def forward(
        self,
        dist: torch.Tensor,
        ref: torch.Tensor | None = None,
        *,
        ref_features: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Score ``dist`` (and, for FR, its reference ``ref``, or the reference's
        :meth:`backbone_features` as ``ref_features``); RGB in [0, 1], (N, 3, H, W)."""
        if ref_features is not None:
            if not self.use_ref or ref is not None:
                raise InvalidInputError(
                    "ref_features are for full-reference models, instead of ref (not with it)."
                )
            if ref_features[0].shape[0] != dist.shape[0]:
                raise InvalidInputError(
                    f"{ref_features[0].shape[0]} reference features for {dist.shape[0]} frames: "
                    "pass one reference frame's features per distorted frame."
                )
            self._check_inputs(dist, dist)
            feats = [
                torch.cat((d, r))
                for d, r in zip(self.backbone_features(dist), ref_features, strict=True)
            ]
        else:
            self._check_inputs(dist, ref)
            # One backbone pass over dist and ref together: batch norm is in eval mode, so
            # samples do not interact and this equals two passes.
            feats = self.backbone_features(dist if ref is None else torch.cat((dist, ref)))
        return self._head(feats, dist.shape[0])

    def _head(self, feats: Sequence[torch.Tensor], n: int) -> torch.Tensor:
        """The attention head on backbone features (dist first, then ref for FR)."""
        top_h, top_w = feats[-1].shape[-2:]
        tokens: list[torch.Tensor] = []
        for level in reversed(range(len(feats))):
            feat = feats[level]
            if self.use_ref:
                d, r = feat[:n], feat[n:]
                diff = torch.sqrt((d - r) ** 2 + DISTANCE_EPS)
                feat = torch.cat((d, r, diff), dim=1) * self.weight_pool[level](diff)
            else:
                feat = self.weight_pool[level](feat)
            # The reference pools only when both sides exceed the top grid; keep that rule.
            if feat.shape[2] > top_h and feat.shape[3] > top_w:
                feat = F.adaptive_avg_pool2d(feat, (top_h, top_w))
            h, w = feat.shape[-2:]
            x = self.dim_reduce[level](feat).flatten(2).transpose(1, 2)
            x = x + self._positional_embedding(h, w).to(x.dtype)
            tokens.append(self.sa_attn_blks[level](x))

        query = tokens[0]
        for block, memory in zip(self.attn_blks, tokens[1:], strict=True):
            query = block(query, memory)
        pooled = self.attn_pool(query).mean(dim=1)
        return self.score_linear(pooled).squeeze(-1)


@functools.lru_cache(maxsize=2)
def _layout(use_ref: bool) -> tuple[tuple[str, tuple[int, ...], torch.dtype], ...]:
    """(key, shape, dtype) of every state_dict entry, from a weightless (meta) model."""
    with torch.device("meta"):
        model = CFANet(use_ref)
    return tuple((key, tuple(t.shape), t.dtype) for key, t in model.state_dict().items())


def cfanet_key_shapes(use_ref: bool) -> dict[str, tuple[int, ...]]:
    """State_dict layout (key -> shape) of :class:`CFANet`, computed without allocating weights."""
    return {key: shape for key, shape, _ in _layout(use_ref)}


def cfanet_key_dtypes(use_ref: bool) -> dict[str, torch.dtype]:
    """dtype of every state_dict entry of :class:`CFANet` (float32, except BatchNorm's integer
    ``num_batches_tracked`` counters), computed without allocating weights."""
    return {key: dtype for key, _, dtype in _layout(use_ref)}


def _is_integer_dtype(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def dtype_mismatches(
    state_dict: Mapping[str, object], expected: Mapping[str, torch.dtype]
) -> list[str]:
    """Entries whose tensor cannot fill the model's slot, as ``"key: int64 (model: floating
    point)"``. Any floating dtype fills a float slot (it is cast); integer slots need integers.
    Keys absent from either side and non-tensors are left to the key/shape checks."""
    problems: list[str] = []
    for key, want in expected.items():
        value = state_dict.get(key)
        if not isinstance(value, torch.Tensor):
            continue
        if value.layout != torch.strided:
            problems.append(f"{key}: {value.layout} layout (model: dense)")
        elif want.is_floating_point and not value.is_floating_point():
            problems.append(f"{key}: {value.dtype} (model: floating point)")
        elif _is_integer_dtype(want) and not _is_integer_dtype(value.dtype):
            problems.append(f"{key}: {value.dtype} (model: integer)")
    return problems


def _unwrap(state_dict: object) -> object:
    # Official files hold {"params": state_dict}; accept either form.
    params = state_dict.get("params") if isinstance(state_dict, Mapping) else None
    return params if isinstance(params, Mapping) else state_dict


def _guess_kind(state_dict: Mapping[str, object]) -> str | None:
    """'NR', 'FR', 'IAA' or None, from distinctive keys/shapes of TOPIQ checkpoints."""
    head = state_dict.get("score_linear.6.weight")
    if isinstance(head, torch.Tensor) and head.ndim == 2 and head.shape[0] > 1:
        return "IAA"
    if "weight_pool.0.splitconv.weight" in state_dict:
        return "NR"
    if "weight_pool.0.0.weight" in state_dict:
        return "FR"
    return None


def _listed(label: str, items: list[str]) -> str:
    shown = ", ".join(items[:_ERROR_KEY_LIMIT])
    more = f" (+{len(items) - _ERROR_KEY_LIMIT} more)" if len(items) > _ERROR_KEY_LIMIT else ""
    return f"{len(items)} {label}: {shown}{more}"


def check_cfanet_state_dict(
    state_dict: object,
    use_ref: bool,
    *,
    source: str | None = None,
    other_mode_hint: str | None = None,
    advice: str | None = None,
) -> dict[str, torch.Tensor]:
    """The one check of CFANet weights: exactly the model's keys, with its shapes and dtypes.

    ``state_dict`` is a plain state_dict or an official ``{"params": state_dict}``; the plain
    dict is returned. Otherwise raises :class:`WeightsError` naming what is wrong (missing
    and unexpected keys, shape and dtype mismatches, which kind of checkpoint it looks like).
    ``source`` names the weights in the message (e.g. the file), ``other_mode_hint`` replaces
    the generic advice when they are the other mode's (NR vs FR) and ``advice`` ends it.
    """
    subject = source or "The state_dict"
    tail = [advice] if advice else []
    state_dict = _unwrap(state_dict)
    if not isinstance(state_dict, Mapping):
        raise WeightsError(
            " ".join(
                [
                    f"{subject} is not a state_dict (name -> tensor) nor "
                    f'{{"params": state_dict}}: it holds a {type(state_dict).__name__}.',
                    *tail,
                ]
            )
        )
    not_tensors = [
        f"{key!r} ({type(value).__name__})"
        for key, value in state_dict.items()
        if not (isinstance(key, str) and isinstance(value, torch.Tensor))
    ]
    if not_tensors:
        raise WeightsError(
            " ".join(
                [
                    f"{subject} is not a state_dict (name -> tensor) nor "
                    f'{{"params": state_dict}}: {len(not_tensors)} entries are not named '
                    f"tensors, e.g. {', '.join(not_tensors[:3])}.",
                    *tail,
                ]
            )
        )

    layout = _layout(use_ref)
    expected = {key: shape for key, shape, _ in layout}
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    wrong = [
        f"{key}: file {tuple(state_dict[key].shape)}, model {shape}"
        for key, shape in expected.items()
        if key in state_dict and tuple(state_dict[key].shape) != shape
    ]
    bad_dtypes = dtype_mismatches(state_dict, {key: dtype for key, _, dtype in layout})
    if not (missing or unexpected or wrong or bad_dtypes):
        return dict(state_dict)

    want = "FR" if use_ref else "NR"
    kind = _guess_kind(state_dict)
    lines = [f"{subject} does not fit the TOPIQ CFANet {want} (ResNet50) architecture."]
    if kind == "IAA":
        lines.append(
            "This looks like an aesthetics (IAA) checkpoint with a class-distribution head; "
            "only the NR and FR quality checkpoints are supported."
        )
    elif kind is not None and kind != want:
        lines.append(
            other_mode_hint
            or f"This looks like an {kind} checkpoint; use it with an {kind} model "
            f"(use_ref={kind == 'FR'}) or pick an {want} checkpoint."
        )
    elif not any(key.startswith("semantic_model.") for key in state_dict):
        lines.append("It has no ResNet50 backbone keys: it is probably not a CFANet checkpoint.")
    elif bad_dtypes and not (missing or unexpected or wrong):
        lines.append(
            f"Names and shapes fit, but {len(bad_dtypes)} tensor(s) have the wrong type: the "
            "network needs floating-point weights (and integer BatchNorm counters). It is not "
            "the published checkpoint (converted or quantized?)."
        )
    for label, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", wrong),
        ("dtype mismatches", bad_dtypes),
    ):
        if items:
            lines.append(_listed(label, items))
    raise WeightsError("\n".join(lines + tail))


def load_cfanet_state_dict(model: CFANet, state_dict: Mapping[str, object]) -> None:
    """Load weights strictly into ``model`` (in place).

    ``state_dict`` is a plain state_dict or an official ``{"params": state_dict}`` file content.
    Raises :class:`WeightsError` naming missing/unexpected keys, shape and dtype mismatches.
    """
    tensors = check_cfanet_state_dict(state_dict, model.use_ref)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:  # e.g. dtype that cannot be copied
        raise WeightsError(f"Could not load the CFANet weights: {exc}") from exc
    logger.debug("loaded %d CFANet tensors", len(tensors))


def cfanet_from_state_dict(
    state_dict: Mapping[str, object],
    use_ref: bool,
    *,
    source: str | None = None,
    other_mode_hint: str | None = None,
    advice: str | None = None,
) -> CFANet:
    """Build a CFANet (eval mode, float32, CPU) directly from weights.

    Faster than ``CFANet(use_ref)`` + :func:`load_cfanet_state_dict`: the network is built on
    the meta device so no random initialisation runs, then copies of the tensors are adopted
    (copies, so the model never shares storage with the caller's dict). The weights are
    checked by :func:`check_cfanet_state_dict`, which the keyword arguments are passed to.
    """
    checked = check_cfanet_state_dict(
        state_dict, use_ref, source=source, other_mode_hint=other_mode_hint, advice=advice
    )
    dtypes = cfanet_key_dtypes(use_ref)
    # Adopt each tensor in the model's own dtype (float32; int64 counters).
    tensors = {
        key: value.to(device="cpu", dtype=dtypes[key], copy=True) for key, value in checked.items()
    }
    del checked
    with torch.device("meta"):
        model = CFANet(use_ref)
    try:
        model.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as exc:  # anything the check above did not foresee
        raise WeightsError(f"Could not load the CFANet weights: {exc}") from exc
    return model.eval()


__all__ = [
    "CFANet",
    "DecoderLayer",
    "EncoderLayer",
    "GatedConv",
    "MultiheadAttention",
    "ResNet50Features",
    "cfanet_from_state_dict",
    "check_cfanet_state_dict",
    "cfanet_key_dtypes",
    "cfanet_key_shapes",
    "dtype_mismatches",
    "load_cfanet_state_dict",
]
