"""Swin Transformer backbone (Mask2Former variant, as in Semantic-SAM) and its detectron2 adapter.

This variant accepts any input size: the patch embedding pads the image to a multiple of the
patch size, and every block pads its tokens (after ``norm1``) to a multiple of the window size,
masks the shifted windows with an attention mask, and crops back.

Shape shorthand: B = batch, C = channels of a stage, H, W = token grid of a stage,
ws = window size, N = ws * ws tokens per window, nW = windows per image, nH = heads.
"""

from __future__ import annotations

import functools
import logging
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone
from timm.layers import DropPath, trunc_normal_
from torch import Tensor, nn

from ..registry import BACKBONE, register
from ..row_chunks import chunk_rows, rowwise_in_chunks

__all__ = [
    "SwinTransformer",
    "D2SwinTransformer",
    "build_swin_backbone",
    "window_partition",
    "window_layout",
    "WindowLayout",
]

logger = logging.getLogger(__name__)

# Value added to attention logits between tokens from different regions of a shifted window
# (the reference uses -100, not -inf).
_MASK_VALUE = -100.0


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """(B, H, W, C), H and W multiples of ``window_size`` -> (B * nW, ws, ws, C), row-major."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)


class WindowLayout(NamedTuple):
    """How the (H, W) token grid of a stage maps to (padded, optionally shifted) windows.

    Slot s (of nW * N) holds token ``gather[s]``, or zero padding if s is in ``pad_slots``;
    token t sits in slot ``scatter[t]``. ``mask`` is the (nW, N, N) additive attention mask of
    shifted windows (0 within a region, -100 across regions), None without shift.
    """

    gather: Tensor  # (nW * N,) int64
    pad_slots: Tensor  # (P,) int64, possibly empty
    scatter: Tensor  # (H * W,) int64
    mask: Tensor | None  # (nW, N, N) float32
    num_windows: int


@functools.lru_cache(maxsize=64)
def window_layout(
    h: int, w: int, window_size: int, shift_size: int, device: torch.device
) -> WindowLayout:
    """The :class:`WindowLayout` of an (h, w) grid, cached per size: treat it as read-only."""
    with torch.inference_mode(False):  # cached tensors must be usable outside inference mode
        return _window_layout(h, w, window_size, shift_size, device)


def _window_layout(h: int, w: int, ws: int, shift: int, device: torch.device) -> WindowLayout:
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    ids = F.pad(
        torch.arange(h * w, device=device).view(1, h, w, 1), (0, 0, 0, wp - w, 0, hp - h), value=-1
    )
    if shift > 0:
        ids = torch.roll(ids, shifts=(-shift, -shift), dims=(1, 2))
    ids = window_partition(ids, ws).reshape(-1)
    valid = ids >= 0
    scatter = torch.empty(h * w, dtype=torch.long, device=device)
    scatter[ids[valid]] = torch.arange(ids.numel(), device=device)[valid]
    mask = _shifted_window_mask(hp, wp, ws, shift, device) if shift > 0 else None
    return WindowLayout(
        ids.clamp(min=0), (~valid).nonzero().view(-1), scatter, mask, ids.numel() // ws**2
    )


def _shifted_window_mask(hp: int, wp: int, ws: int, shift: int, device: torch.device) -> Tensor:
    """(nW, N, N): after a cyclic shift, a window holds tokens of up to 4 regions that are not
    neighbours in the image; tokens attend only within their own region."""
    region = torch.zeros(1, hp, wp, 1, device=device)
    bounds = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    for label, (hs, wsl) in enumerate((a, b) for a in bounds for b in bounds):
        region[:, hs, wsl, :] = label
    ids = window_partition(region, ws).reshape(-1, ws * ws)
    diff = ids.unsqueeze(1) - ids.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill_(diff != 0, _MASK_VALUE)


def relative_position_index(window_size: int) -> Tensor:
    """(N, N) index into the ((2 ws - 1)^2, nH) bias table for every pair of tokens in a window."""
    axis = torch.arange(window_size)
    coords = torch.stack(torch.meshgrid(axis, axis, indexing="ij")).flatten(1)  # (2, N): row, col
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
    return rel[:, :, 0] * (2 * window_size - 1) + rel[:, :, 1]


class Mlp(nn.Module):
    """Linear -> GELU -> dropout -> Linear -> dropout, on (..., C)."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a learned relative position bias."""

    def __init__(
        self,
        dim: int,
        window_size: int,
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Swin stage width {dim} is not divisible by its {num_heads} heads")
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> Tensor:
        """(nH, N, N) bias added to the attention logits."""
        n = self.window_size**2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, -1).permute(2, 0, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """
        Args:
            x: (B * nW, N, C) window tokens, windows of one image consecutive.
            mask: (nW, N, N) additive mask (shifted windows) or None.

        Returns:
            (B * nW, N, C).
        """
        bw, n, c = x.shape
        bias = self.relative_position_bias().unsqueeze(0)  # (1, nH, N, N)
        if mask is not None:
            bias = bias + mask.unsqueeze(1).to(bias.dtype)  # (nW, nH, N, N)
        nw = bias.shape[0]
        if bw % nw:
            raise ValueError(f"{bw} windows are not a whole number of images of {nw} windows")
        block = max(1, chunk_rows(3 * c) // n)  # windows per block at inference (see row_chunks)
        if self.training or torch.is_grad_enabled() or x.device.type != "cpu" or bw <= block:
            if bw != nw:  # a view for one image, a copy for several
                bias = bias.expand(bw // nw, -1, -1, -1, -1).reshape(bw, *bias.shape[1:])
            return self._attend(x, bias)
        out = torch.empty_like(x)
        group = bw if nw == 1 else nw  # windows sharing one bias, or one image's windows and their masks
        for img in range(0, bw, group):
            for start in range(0, group, block):
                stop = min(start + block, group)
                view = bias if nw == 1 else bias[start:stop]
                out[img + start : img + stop] = self._attend(x[img + start : img + stop], view)
        return out

    def _attend(self, x: Tensor, bias: Tensor) -> Tensor:
        """Attention of (W, N, C) windows with a (W or 1, nH, N, N) additive bias."""
        bw, n, c = x.shape
        qkv = self.qkv(x).view(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (W, nH, N, hd)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=bias.to(q.dtype),
            dropout_p=self.attn_drop if self.training else 0.0,
            scale=self.scale,
        )  # (W, nH, N, hd)
        out = out.transpose(1, 2).reshape(bw, n, c)
        return self.proj_drop(self.proj(out))


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention + MLP, both pre-norm residual, on (B, H * W, C) tokens."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size {shift_size} must be in [0, window_size={window_size})")
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim, window_size, num_heads, qkv_bias, qk_scale, attn_drop, drop
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: Tensor, layout: WindowLayout) -> Tensor:
        """
        Args:
            x: (B, H * W, C).
            layout: the :class:`WindowLayout` of the grid for this block's shift.

        Returns:
            (B, H * W, C).
        """
        b, length, c = x.shape
        if length != layout.scatter.numel():
            raise ValueError(
                f"Swin block got {length} tokens for a grid of {layout.scatter.numel()}"
            )
        # Window partition (with zero padding after norm1 and the cyclic shift) as one gather.
        windows = self.norm1(x).index_select(1, layout.gather)
        if layout.pad_slots.numel():
            windows = windows.index_fill(1, layout.pad_slots, 0.0)
        windows = self.attn(windows.view(-1, self.window_size**2, c), layout.mask)
        x = x + self.drop_path(windows.view(b, -1, c).index_select(1, layout.scatter))
        if self.training:
            return x + self.drop_path(self.mlp(self.norm2(x)))
        return rowwise_in_chunks(lambda t: t + self.mlp(self.norm2(t)), x, self.mlp.fc1.out_features)


class PatchMerging(nn.Module):
    """2x2 token merging: (B, H * W, C) -> (B, ceil(H/2) * ceil(W/2), 2C); odd sizes zero-padded."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        # Order (even row, even col), (odd, even), (even, odd), (odd, odd), as in the checkpoints.
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class BasicLayer(nn.Module):
    """One Swin stage: ``depth`` blocks, regular and shifted windows alternating, then merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: Sequence[float] = (),
        downsample: bool = False,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.use_checkpoint = use_checkpoint
        drop_path = list(drop_path) or [0.0] * depth
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim,
                num_heads,
                window_size,
                0 if i % 2 == 0 else self.shift_size,
                mlp_ratio,
                qkv_bias,
                qk_scale,
                drop,
                attn_drop,
                drop_path[i],
            )
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: Tensor, h: int, w: int) -> tuple[Tensor, Tensor | None, int, int]:
        """
        Args:
            x: (B, H * W, C).

        Returns:
            (stage output (B, H * W, C), merged tokens (B, H' * W', 2C) or None, H', W').
        """
        layouts = {
            blk.shift_size: window_layout(h, w, self.window_size, blk.shift_size, x.device)
            for blk in self.blocks
        }
        for blk in self.blocks:
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(
                    blk, x, layouts[blk.shift_size], use_reentrant=False
                )
            else:
                x = blk(x, layouts[blk.shift_size])
        if self.downsample is None:
            return x, None, h, w
        return x, self.downsample(x, h, w), (h + 1) // 2, (w + 1) // 2


class PatchEmbed(nn.Module):
    """Patch projection: (B, 3, H, W) -> (B, C, ceil(H/p), ceil(W/p)), zero-padding H and W."""

    def __init__(
        self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96, patch_norm: bool = True
    ):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else None

    def forward(self, x: Tensor) -> Tensor:
        p = self.patch_size
        h, w = x.shape[-2:]
        if h % p or w % p:
            x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))
        x = self.proj(x)
        if self.norm is not None:
            b, c, hh, ww = x.shape
            x = self.norm(x.flatten(2).transpose(1, 2)).transpose(1, 2).view(b, c, hh, ww)
        return x


class SwinTransformer(nn.Module):
    """Swin Transformer (Liu et al. 2021) producing multi-scale feature maps.

    Args:
        pretrain_img_size: image size of the ImageNet pretraining (for ``ape`` only).
        patch_size: patch size of the stem (stride of the first stage).
        in_chans: input channels.
        embed_dim: width of stage 0; stage i has ``embed_dim * 2**i`` channels.
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window_size: attention window size (tokens).
        mlp_ratio: MLP hidden width / stage width.
        qkv_bias: learn a bias in the qkv projection.
        qk_scale: attention logit scale; None = head_dim ** -0.5.
        drop_rate: dropout after the stem and in MLP / projection outputs.
        attn_drop_rate: dropout on attention probabilities.
        drop_path_rate: stochastic depth, rising linearly from 0 to this value over all blocks.
        ape: add a learned absolute position embedding after the stem.
        patch_norm: LayerNorm after the patch projection.
        out_indices: stages whose outputs are returned (each through its own ``norm{i}``).
        use_checkpoint: activation checkpointing of every block while training.
    """

    def __init__(
        self,
        *,
        pretrain_img_size: int = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        ape: bool = False,
        patch_norm: bool = True,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        use_checkpoint: bool = False,
    ):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(
                f"Swin depths {list(depths)} and num_heads {list(num_heads)} differ in length"
            )
        num_layers = len(depths)
        if any(not 0 <= i < num_layers for i in out_indices):
            raise ValueError(f"Swin out_indices {list(out_indices)} must lie in [0, {num_layers})")
        self.out_indices = tuple(out_indices)
        self.num_features = [int(embed_dim * 2**i) for i in range(num_layers)]

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, patch_norm)
        if ape:
            grid = pretrain_img_size // patch_size
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, grid, grid))
            trunc_normal_(self.absolute_pos_embed, std=0.02)
        else:
            self.absolute_pos_embed = None
        self.pos_drop = nn.Dropout(p=drop_rate)

        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.ModuleList(
            BasicLayer(
                dim=self.num_features[i],
                depth=depths[i],
                num_heads=num_heads[i],
                window_size=window_size,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                downsample=i < num_layers - 1,
                use_checkpoint=use_checkpoint,
            )
            for i in range(num_layers)
        )
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """
        Args:
            x: (B, in_chans, H, W) normalized images, any H, W.

        Returns:
            ``{"res{i+2}": (B, embed_dim * 2**i, ceil(H / (patch * 2**i)), ...)}`` for i in
            ``out_indices``.
        """
        if x.dim() != 4:
            raise ValueError(
                f"SwinTransformer takes (B, C, H, W) input, got shape {tuple(x.shape)}"
            )
        x = self.patch_embed(x)
        h, w = x.shape[-2:]
        if self.absolute_pos_embed is not None:
            x = x + F.interpolate(self.absolute_pos_embed, size=(h, w), mode="bicubic")
        x = self.pos_drop(x.flatten(2).transpose(1, 2))
        outs = {}
        for i, layer in enumerate(self.layers):
            out, x, h_next, w_next = layer(x, h, w)
            if i in self.out_indices:
                out = getattr(self, f"norm{i}")(out)
                outs[f"res{i + 2}"] = (
                    out.view(-1, h, w, self.num_features[i]).permute(0, 3, 1, 2).contiguous()
                )
            h, w = h_next, w_next
        return outs


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class D2SwinTransformer(SwinTransformer, Backbone):
    """detectron2 ``Backbone`` view of :class:`SwinTransformer` with outputs ``res2``..``res5``.

    Parameter names are those of :class:`SwinTransformer` (``patch_embed.*``, ``layers.*``,
    ``norm0``..``norm3``), as in the released checkpoints under ``model.backbone.``.
    """

    @configurable
    def __init__(
        self, *, out_features: Sequence[str] = ("res2", "res3", "res4", "res5"), **swin_kwargs
    ):
        """
        Args:
            out_features: names of the returned features, a subset of res2..res5 whose stages are
                in ``out_indices``.
            swin_kwargs: keyword arguments of :class:`SwinTransformer`.
        """
        super().__init__(**swin_kwargs)
        patch = self.patch_embed.patch_size
        self._out_feature_strides = {f"res{i + 2}": patch * 2**i for i in range(len(self.layers))}
        self._out_feature_channels = {f"res{i + 2}": c for i, c in enumerate(self.num_features)}
        available = [f"res{i + 2}" for i in self.out_indices]
        unknown = [f for f in out_features if f not in available]
        if unknown:
            raise ValueError(
                f"Swin OUT_FEATURES {unknown} are not produced; available: {available}"
            )
        self._out_features = list(out_features)

    @classmethod
    def from_config(cls, cfg) -> dict:
        swin = cfg.MODEL.BACKBONE.SWIN
        return {
            "pretrain_img_size": swin.PRETRAIN_IMG_SIZE,
            "patch_size": swin.PATCH_SIZE,
            "embed_dim": swin.EMBED_DIM,
            "depths": list(swin.DEPTHS),
            "num_heads": list(swin.NUM_HEADS),
            "window_size": swin.WINDOW_SIZE,
            "mlp_ratio": swin.MLP_RATIO,
            "qkv_bias": swin.QKV_BIAS,
            "qk_scale": swin.QK_SCALE,
            "drop_rate": swin.DROP_RATE,
            "attn_drop_rate": swin.ATTN_DROP_RATE,
            "drop_path_rate": swin.DROP_PATH_RATE,
            "ape": swin.APE,
            "patch_norm": swin.PATCH_NORM,
            "out_indices": list(swin.OUT_INDICES),
            "use_checkpoint": swin.USE_CHECKPOINT,
            "out_features": list(swin.OUT_FEATURES),
        }

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """(B, 3, H, W) normalized images -> ``{name: (B, C, H / stride, W / stride)}``."""
        outs = super().forward(x)
        return {k: outs[k] for k in self._out_features}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }

    @property
    def size_divisibility(self) -> int:
        return 32


@register(BACKBONE, "swin")
def build_swin_backbone(cfg) -> D2SwinTransformer:
    """Build the Swin backbone from ``cfg.MODEL.BACKBONE.SWIN``; with ``LOAD_PRETRAINED`` load the
    ImageNet weights named by ``MODEL.BACKBONE.PRETRAINED`` if it is a local file (never downloads).
    """
    from .swin_pretrained import load_pretrained_from_config

    model = D2SwinTransformer(cfg)
    load_pretrained_from_config(model, cfg)
    return model
