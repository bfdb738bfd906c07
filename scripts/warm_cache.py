"""Fill a training cache in parallel: every case of a dataset, preprocessed for each given config.

    python scripts/warm_cache.py DATASET CACHE_DIR CONFIG.json [CONFIG.json ...] [--workers N]

`train --cache CACHE_DIR` then starts without reading a single image.
"""

import argparse
import multiprocessing

from TACEResponseLib.model_package import build_network
from TACEResponseLib.preprocessing import PreprocessingSpec
from TACEResponseTraining.config import load_config
from TACEResponseTraining.dataset import load_case, read_dataset
from TACEResponseTraining.model_card import network_card


def _job(args):
    record, spec, multiple, cache_dir, with_context = args
    load_case(record, spec, multiple, cache_dir, with_context)
    return record.case_id


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("cache")
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--workers", type=int, default=multiprocessing.cpu_count())
    args = parser.parse_args()
    jobs = []
    for path in args.configs:
        config = load_config(path)
        card = network_card(config)
        spec = PreprocessingSpec.from_card(card)
        multiple = build_network(card).size_multiple
        jobs += [(record, spec, multiple, args.cache, bool(config.get("context_classes")))
                 for record in read_dataset(args.dataset, spec.phases)]
    with multiprocessing.Pool(args.workers) as pool:
        for done, _ in enumerate(pool.imap_unordered(_job, jobs), 1):
            if done % 50 == 0 or done == len(jobs):
                print("cached {}/{}".format(done, len(jobs)), flush=True)


if __name__ == "__main__":
    main()
