# Sourced at the start of a device call (bash): the carried wheels into /tmp/site, and ../shared rebuilt from
# the carried archives (../shared does not travel; .stage_data/*.tar.xz hold the parts a call needs).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p ../shared
for archive in .stage_data/*.tar.xz; do tar xJf "$archive" -C ../shared; done
