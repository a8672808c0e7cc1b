"""RuntimeSettings: the runtime a model will run under and the settings that change its memory.

A compact group of controls that builds a :class:`~app.core.runtime_profile.RuntimeProfile` and emits it
(``sigProfileChanged``) whenever a setting changes. Only runtimes that suit the model type are offered,
and only the settings that matter for it: an LLM's attention, sequences, micro-batch and KV cache; a
diffusion pipeline's size, images and where its components sit; a speech model's beams and batch.

Every control shows what the runtime does by default (a spin box's "default (4)", a tooltip quoting
:data:`~app.core.runtime_profile.RUNTIMES`' sources); a setting left at its default stays ``None`` in the
profile, so the estimate follows the runtime. Spin boxes are debounced (``DEBOUNCE_MS``): holding an arrow
key re-plans once it is released, not at every step. No figures are computed here.

The group starts from ``initial`` (a host's :attr:`ModelResourceManager.runtime_profile`, say) and
:meth:`RuntimeSettings.set_profile` sets every control from a profile at once: ``set_profile(p)`` then
``profile()`` gives ``p`` back for the settings the model type shows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import QCheckBox, QComboBox, QGroupBox, QHBoxLayout, QLabel, QSpinBox, QVBoxLayout, QWidget

from app.core.model_registry import ModelType
from app.core.runtime_profile import (
    CACHE_TYPES,
    MAX_PARALLEL,
    RUNTIMES,
    RuntimeDefaults,
    RuntimeProfile,
    runtime_for,
    runtimes_for,
)

__all__ = ["RuntimeSettings", "DefaultSpin", "runtimes_for"]

_IMAGE_TYPES = (ModelType.TEXT_TO_IMAGE, ModelType.TEXT_TO_VIDEO)
#: Runtimes offered per model type (the rest: transformers).
def _sources(defaults: Iterable[RuntimeDefaults], topic: str | None = None) -> str:
    """The defaults' sources (those mentioning ``topic`` where any does), one line per runtime."""
    lines = []
    for d in defaults:
        found = [s for s in d.sources if topic is None or topic in s.lower()] or list(d.sources)
        lines.append(f"{d.label}: " + "; ".join(found))
    return "\n".join(lines)


class DefaultSpin(QSpinBox):
    """A spin box whose lowest value (0) means "the runtime's default", shown as ``default (N)``.

    Stepping up from the default lands on the default's own value; ``doubling`` steps through powers
    of two (micro-batch sizes).
    """

    def __init__(self, maximum: int, *, doubling: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setRange(0, maximum)
        self._doubling = doubling
        self._default: int | None = None
        self.set_default(None)

    def set_default(self, value: int | None) -> None:
        """The runtime's value (None: it differs between the runtimes that may be chosen)."""
        self._default = value
        self.setSpecialValueText(f"default ({value})" if value is not None else "default (by runtime)")

    def setting(self) -> int | None:
        """The value chosen, or None for the runtime's default."""
        return self.value() or None

    def stepBy(self, steps: int) -> None:  # noqa: N802
        value = self.value()
        if value == 0 and steps > 0:
            self.setValue(self._default or 1)
        elif self._doubling and value:
            target = value * (2 ** steps) if steps > 0 else value // (2 ** -steps)
            self.setValue(max(0, min(self.maximum(), target)))
        else:
            super().stepBy(steps)


class PixelSpin(QSpinBox):
    """Pixels per side, always a multiple of 8 (a latent pixel is 8×8 image pixels)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setRange(64, 8192)
        self.setSingleStep(64)
        self.setSuffix(" px")

    def validate(self, text: str, pos: int) -> object:  # noqa: D401
        state, text, pos = super().validate(text, pos)
        if state == QValidator.State.Acceptable and self.valueFromText(text) % 8:
            state = QValidator.State.Intermediate
        return state, text, pos

    def fixup(self, text: str) -> str:
        try:
            value = self.valueFromText(text)
        except ValueError:
            return text
        return self.prefix() + self.textFromValue(max(self.minimum(), min(self.maximum(), round(value / 8) * 8))) \
            + self.suffix()


class RuntimeSettings(QGroupBox):
    """The "Runtime" group: a runtime combo and the settings relevant to ``model_type``.

    ``levels`` are the model's candidate levels (what "Automatic" may pick a runtime for);
    ``backend_hint`` the runtime the model names; ``resolution`` its default (width, height);
    ``initial`` the profile the controls start from (None: every setting at the runtime's default).
    """

    sigProfileChanged = Signal(object)
    #: How long spin boxes wait after the last step before the profile is sent.
    DEBOUNCE_MS = 150

    def __init__(self, model_type: ModelType, *, levels: Iterable[str] = (), backend_hint: str | None = None,
                 resolution: tuple[int, int] = (1024, 1024), initial: RuntimeProfile | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__("Runtime", parent)
        self.model_type = model_type
        self.is_llm = model_type == ModelType.LLM
        self.is_image = model_type in _IMAGE_TYPES
        self.is_speech = model_type == ModelType.SPEECH_TO_TEXT
        value = model_type.value
        self._auto = tuple(dict.fromkeys(runtime_for(value, lv, backend_hint) for lv in levels)) \
            or (runtime_for(value, None, backend_hint),)
        self._flash_override: bool | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(self.DEBOUNCE_MS)
        self._timer.timeout.connect(self._emit)
        self._profile = RuntimeProfile()
        self._resolution = resolution

        self.runtime_combo = QComboBox()
        auto = ", ".join(RUNTIMES[r].label for r in self._auto)
        self.runtime_combo.addItem(f"Automatic ({auto})" if len(self._auto) == 1
                                   else "Automatic (by level)", None)
        for name in runtimes_for(model_type):
            self.runtime_combo.addItem(RUNTIMES[name].label, name)
        self.runtime_combo.setToolTip(
            "The runtime that will load the model: its defaults and what it keeps where change the estimate. "
            "Naming one limits the levels to those it loads (GGUF levels for llama.cpp, Ollama and whisper.cpp).\n"
            "Automatic: " + ("; ".join(f"{RUNTIMES[r].label}" for r in self._auto))
            + (" (GGUF levels in the ggml runtime, the others in transformers)" if len(self._auto) > 1 else ""))
        self.runtime_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)

        column = QVBoxLayout(self)
        column.setContentsMargins(8, 4, 8, 6)
        column.setSpacing(4)
        self._rows = (QHBoxLayout(), QHBoxLayout())
        for row in self._rows:
            row.setSpacing(6)
            column.addLayout(row)
        self._add(0, "R&untime:", self.runtime_combo)
        self._controls: list[QWidget] = [self.runtime_combo]

        # LLM
        self.flash_check = QCheckBox("&Flash attention")
        self.parallel_spin = DefaultSpin(MAX_PARALLEL)
        self.parallel_spin.setToolTip("Sequences served at once (llama-server slots, OLLAMA_NUM_PARALLEL): the KV "
                                      "cache holds the context for each.")
        self.ubatch_spin = DefaultSpin(1 << 16, doubling=True)
        self.k_combo, self.v_combo = QComboBox(), QComboBox()
        for combo, which in ((self.k_combo, "K"), (self.v_combo, "V")):
            combo.addItem("default (f16)", None)
            for t in CACHE_TYPES:
                combo.addItem(t, t)
            combo.setToolTip(f"Element type of the KV cache's {which} half (llama.cpp --cache-type-{which.lower()}); "
                             "default f16. A quantized V cache needs flash attention in llama.cpp.")
        self.kv_ram_check = QCheckBox("KV cache in R&AM")
        self.kv_ram_check.setToolTip("Keep the KV cache in system memory (llama.cpp --no-kv-offload): the GPU holds "
                                     "weights and compute buffer only. Default: on the GPU.")
        # image / video
        self.width_spin, self.height_spin = PixelSpin(), PixelSpin()
        for spin, side in ((self.width_spin, 0), (self.height_spin, 1)):
            spin.setValue(resolution[side])
            spin.setToolTip(f"Output size, a multiple of 8; default {resolution[0]}×{resolution[1]} (the model's "
                            "native size). Activations and the VAE decode grow with the pixel count.")
        self.images_spin = QSpinBox()
        self.images_spin.setRange(1, 64)
        self.images_spin.setValue(1)
        self.images_spin.setToolTip("Images generated at once; default 1.\n" + _sources([RUNTIMES["diffusers"]],
                                                                                         "num_images"))
        self.offload_check = QCheckBox("&One component on the GPU at a time")
        self.offload_check.setToolTip("diffusers' enable_model_cpu_offload(): only the running phase's components "
                                      "are on the GPU. Default: every component on the GPU after pipe.to('cuda').")
        self.text_cpu_check = QCheckBox("&Text encoders on the CPU")
        self.text_cpu_check.setToolTip("Run the text encoders from system memory: the GPU holds the denoiser and "
                                       "the VAE. Default: on the GPU.")
        self.tiling_check = QCheckBox("&VAE tiling")
        self.tiling_check.setToolTip("pipe.enable_vae_tiling(): decode in 512-pixel tiles, so the decode peak "
                                     "stops growing with the image size. Default: off.")
        # speech
        self.beams_spin = DefaultSpin(64)
        self.batch_spin = DefaultSpin(256)
        self.batch_spin.set_default(1)
        self.batch_spin.setToolTip("Audio windows decoded at once. Default 1 (one 30-second window at a time).")

        if self.is_llm:
            self._add(0, None, self.flash_check)
            self._add(0, None, self.kv_ram_check)
            self._add(1, "&Parallel:", self.parallel_spin)
            self._add(1, "&Micro-batch:", self.ubatch_spin)
            self._add(1, "&K cache:", self.k_combo)
            self._add(1, "&V cache:", self.v_combo)
            self._controls += [self.flash_check, self.kv_ram_check, self.parallel_spin, self.ubatch_spin,
                               self.k_combo, self.v_combo]
        elif self.is_image:
            size = QWidget()
            box = QHBoxLayout(size)
            box.setContentsMargins(0, 0, 0, 0)
            box.addWidget(self.width_spin)
            box.addWidget(QLabel("×"))
            box.addWidget(self.height_spin)
            label = self._add(0, "&Size:", size)
            label.setBuddy(self.width_spin)  # a layout has no buddy: point the mnemonic at the width
            self._add(0, "&Images:", self.images_spin)
            self._add(1, None, self.offload_check)
            self._add(1, None, self.text_cpu_check)
            self._add(1, None, self.tiling_check)
            self._controls += [self.width_spin, self.height_spin, self.images_spin, self.offload_check,
                               self.text_cpu_check, self.tiling_check]
        elif self.is_speech:
            self._add(0, "Bea&ms:", self.beams_spin)
            self._add(0, "&Batch:", self.batch_spin)
            self._controls += [self.beams_spin, self.batch_spin]
        for row in self._rows:
            row.addStretch(1)

        self._apply_defaults()
        if initial is not None:
            self._set_controls(initial)  # nothing is connected yet: no signal
        self._profile = self._build()
        self.runtime_combo.currentIndexChanged.connect(self._on_runtime)
        self.flash_check.toggled.connect(self._on_flash)
        for check in (self.kv_ram_check, self.offload_check, self.text_cpu_check, self.tiling_check):
            check.toggled.connect(self._emit)
        for combo in (self.k_combo, self.v_combo):
            combo.currentIndexChanged.connect(self._emit)
        for spin in (self.parallel_spin, self.ubatch_spin, self.width_spin, self.height_spin, self.images_spin,
                     self.beams_spin, self.batch_spin):
            spin.setKeyboardTracking(False)  # typed numbers count on Enter or leaving the field
            spin.valueChanged.connect(self._debounce)

    # --- API ---------------------------------------------------------------------------------------
    def profile(self) -> RuntimeProfile:
        """The profile as the controls stand (settings left at the default are None)."""
        return self._profile

    def set_profile(self, profile: RuntimeProfile) -> None:
        """Set every control from ``profile`` (a setting it leaves None shows the runtime's default).

        Emits ``sigProfileChanged`` once at the end if the profile changed, never once per control; a
        pending debounced change is dropped (``profile`` replaces it). Settings this model type does not
        show (an LLM's cache types for a diffusion model, the backend) are not kept.
        """
        self._timer.stop()
        self._set_controls(profile)
        self._emit()

    def runtime(self) -> str | None:
        """The runtime chosen, or None for automatic (each level's own runtime)."""
        return self.runtime_combo.currentData()

    def set_runtime(self, name: str | None) -> None:
        i = self.runtime_combo.findData(name)
        if i >= 0:
            self.runtime_combo.setCurrentIndex(i)

    def flush(self) -> None:
        """Send a pending (debounced) change now."""
        if self._timer.isActive():
            self._timer.stop()
            self._emit()

    def controls(self) -> list[QWidget]:
        """The controls shown, in tab order."""
        return list(self._controls)

    # --- internals ---------------------------------------------------------------------------------
    def _add(self, row: int, text: str | None, widget: QWidget) -> QLabel | None:
        """``widget`` (after its label, if any) at the end of ``row``, a gap after the previous setting."""
        line = self._rows[row]
        if line.count():
            line.addSpacing(10)
        label = None
        if text is not None:
            label = QLabel(text)
            label.setBuddy(widget)
            line.addWidget(label)
        line.addWidget(widget)
        return label

    def _candidates(self) -> tuple[RuntimeDefaults, ...]:
        name = self.runtime()
        return (RUNTIMES[name],) if name else tuple(RUNTIMES[r] for r in self._auto)

    def _common(self, attr: str, among: tuple[RuntimeDefaults, ...] = ()) -> Any:
        """The default every candidate runtime shares for ``attr`` (None: they differ)."""
        values = {getattr(d, attr) for d in among or self._candidates()}
        return values.pop() if len(values) == 1 else None

    def _apply_defaults(self) -> None:
        """Show the chosen runtime's defaults; a setting the user changed stays as it is."""
        cands = self._candidates()
        flash = self._common("flash_attention")
        self.flash_check.blockSignals(True)
        self.flash_check.setChecked(flash if self._flash_override is None else self._flash_override)
        self.flash_check.blockSignals(False)
        flash_text = "on" if flash else "off" if flash is not None else "by runtime"
        self.flash_check.setToolTip(
            "Attention without the full score matrix (llama.cpp -fa, Ollama OLLAMA_FLASH_ATTENTION, sdpa): off, "
            f"the compute buffer grows with the context. Default: {flash_text}.\n" + _sources(cands, "attention"))
        self.parallel_spin.set_default(self._common("parallel"))
        ggml = tuple(d for d in cands if d.kind == "ggml")  # the micro-batch is llama.cpp's and Ollama's
        self.ubatch_spin.set_default(self._common("ubatch", ggml))
        self.ubatch_spin.setEnabled(bool(ggml))
        self.ubatch_spin.setToolTip("Tokens per micro-batch (llama.cpp --ubatch-size, Ollama num_batch): the compute "
                                    "buffer is sized by it. Only ggml runtimes have one.\n"
                                    + _sources(ggml or cands, "batch"))
        self.beams_spin.set_default(self._common("beams"))
        self.beams_spin.setToolTip("Beam search width: the decoder keeps a cache per beam.\n" + _sources(cands, "beam"))

    def _set_controls(self, profile: RuntimeProfile) -> None:
        """Every control from ``profile``, with no control's signal sent."""
        widgets = [self.runtime_combo, self.flash_check, self.parallel_spin, self.ubatch_spin, self.k_combo,
                   self.v_combo, self.kv_ram_check, self.width_spin, self.height_spin, self.images_spin,
                   self.offload_check, self.text_cpu_check, self.tiling_check, self.beams_spin, self.batch_spin]
        blocked = [w.blockSignals(True) for w in widgets]
        try:
            index = self.runtime_combo.findData(profile.runtime)
            self.runtime_combo.setCurrentIndex(max(0, index))  # a runtime this type lacks: automatic
            if self.is_llm:
                self._flash_override = profile.flash_attention
                self.parallel_spin.setValue(profile.parallel or 0)
                self.ubatch_spin.setValue(profile.ubatch or 0)
                for combo, value in ((self.k_combo, profile.cache_type_k), (self.v_combo, profile.cache_type_v)):
                    combo.setCurrentIndex(max(0, combo.findData(value)))
                self.kv_ram_check.setChecked(not profile.kv_offload)
            elif self.is_image:
                self.width_spin.setValue(profile.width or self._resolution[0])
                self.height_spin.setValue(profile.height or self._resolution[1])
                self.images_spin.setValue(profile.batch or 1)
                self.offload_check.setChecked(profile.offload == "model")
                self.text_cpu_check.setChecked(profile.text_encoder_device == "cpu")
                self.tiling_check.setChecked(profile.vae_tiling)
            elif self.is_speech:
                self.beams_spin.setValue(profile.beams or 0)
                self.batch_spin.setValue(profile.batch or 0)
            self._apply_defaults()  # the runtime's defaults and the flash check (from the override)
        finally:
            for w, was in zip(widgets, blocked, strict=True):
                w.blockSignals(was)

    def _on_runtime(self) -> None:
        self._apply_defaults()
        self._emit()

    def _on_flash(self, checked: bool) -> None:
        flash = self._common("flash_attention")
        self._flash_override = None if flash is not None and checked == flash else checked
        self._emit()

    def _debounce(self) -> None:
        self._timer.start()

    def _build(self) -> RuntimeProfile:
        fields: dict[str, Any] = {"runtime": self.runtime()}
        if self.is_llm:
            fields.update(flash_attention=self._flash_override, parallel=self.parallel_spin.setting(),
                          ubatch=self.ubatch_spin.setting(), cache_type_k=self.k_combo.currentData(),
                          cache_type_v=self.v_combo.currentData(), kv_offload=not self.kv_ram_check.isChecked())
        elif self.is_image:
            images = self.images_spin.value()
            fields.update(width=self.width_spin.value(), height=self.height_spin.value(),
                          batch=images if images > 1 else None,
                          offload="model" if self.offload_check.isChecked() else "none",
                          text_encoder_device="cpu" if self.text_cpu_check.isChecked() else "gpu",
                          vae_tiling=self.tiling_check.isChecked())
        elif self.is_speech:
            fields.update(beams=self.beams_spin.setting(), batch=self.batch_spin.setting())
        return RuntimeProfile(**fields)

    def _emit(self) -> None:
        self._timer.stop()
        profile = self._build()
        if profile != self._profile:
            self._profile = profile
            self.sigProfileChanged.emit(profile)
