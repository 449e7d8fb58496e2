#!/usr/bin/env bash
# The test command of the README: install chestaid with its test extras, make sure Debian's chromium (the browser
# test), dcmtk (JPEG Lossless DICOMs made with dcmcjpeg; modalities and receivers for the node, TLS ones too, with
# certificates from openssl), orthanc (a PACS) with orthanc-dicomweb (its DICOMweb plugin),
# dicom3tools (dciodvfy, DICOM's validator), r-cran-proc (R's pROC, a statistics oracle) and postgresql (the store
# shared by several nodes) are there (installed with apt-get when missing and
# we are root; otherwise those tests are skipped),
# run the whole suite in two pytest-xdist workers (one thread each, whole files per worker, the trained fixtures
# built once and shared: tests/conftest.py; waits on servers and subprocesses then overlap with computing),
# then every code block of the README in a fresh copy (scripts/run_readme.py).
#   --fast   the inner loop: only the tests that train nothing and start no peer (markers trains, peers, slow
#            deselected; a few minutes on 2 cores), no package or README step
# Other arguments go to pytest and skip the README run (e.g. bash scripts/test.sh -k serve).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--fast" ]; then
    shift
    exec python -m pytest -q -n 2 --dist loadfile -m "not trains and not peers and not slow" "$@"
fi
python -m pip install -q -e ".[dev]"
if ! command -v chromium >/dev/null 2>&1 || ! command -v dcmcjpeg >/dev/null 2>&1 || ! command -v dciodvfy >/dev/null 2>&1 \
        || ! command -v Orthanc >/dev/null 2>&1 || ! command -v Rscript >/dev/null 2>&1 \
        || [ ! -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || ! command -v openssl >/dev/null 2>&1 \
        || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium dcmtk orthanc \
            orthanc-dicomweb dicom3tools r-cran-proc openssl postgresql >/dev/null
    else
        echo "note: chromium or dcmtk not found and not root: the browser and dcmtk tests will be skipped" >&2
    fi
fi
python -m pytest -q -n 2 --dist loadfile "$@"
if [ "$#" -eq 0 ]; then
    python scripts/run_readme.py
fi
