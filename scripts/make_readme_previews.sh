#!/usr/bin/env bash
# The README's previews: `tace-response predict --preview` on the two real CTs in ../shared/data, each
# preview copied to Resources/Screenshots/preview_<name>_<tag>.png (e.g. tag "before" / "after" a new model).
#   bash scripts/make_readme_previews.sh TAG OUTROOT [predict options, e.g. --model PATH]
# Predictions land in OUTROOT/<name>/ (replaced if there). DATA (default ../shared/data beside the repo).
set -euo pipefail
tag=${1:?usage: make_readme_previews.sh TAG OUTROOT [predict options]}
out_root=${2:?usage: make_readme_previews.sh TAG OUTROOT [predict options]}
shift 2
repo=$(cd "$(dirname "$0")/.." && pwd)
data=${DATA:-$repo/../shared/data}
screenshots=$repo/Resources/Screenshots
mkdir -p "$out_root" "$screenshots"
run() {
    local name=$1 input=$2
    shift 2
    if [ ! -e "$input" ]; then
        echo "skipping $name: $input not found" >&2
        return 0
    fi
    python3 -m TACEResponseLib predict "$input" -o "$out_root/$name" --preview --overwrite \
        --progress none "$@"
    cp "$out_root/$name/preview.png" "$screenshots/preview_${name}_${tag}.png"
    echo "wrote $screenshots/preview_${name}_${tag}.png"
}
run hcc_048 "$data/hcc-tace-seg-HCC_048-portal-venous" "$@"
run totalsegmentator "$data/totalsegmentator-example/example_ct.nii.gz" "$@"
