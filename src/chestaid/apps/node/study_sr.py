"""The study result: one TID 1500 Comprehensive SR per study, referencing every scored image of it, per finding the
highest score among them and the decision "present" when any image was flagged; version N supersedes version N-1
(Predecessor Documents Sequence), so a PACS holds one current result per study."""

from __future__ import annotations

from typing import TYPE_CHECKING

import highdicom as hd
from pydicom.dataset import Dataset

from chestaid.apps.node.results import NOTE, _text, derived_uid, finding_groups, report_sr, results_header


if TYPE_CHECKING:
    from chestaid.apps.node.outputs import StudyResult


def make_study_sr(result: "StudyResult") -> Dataset:
    sources = [results_header(s)[0] for s in result.sources]
    study_uid = str(sources[0].StudyInstanceUID)
    run = (result.algorithm.run_name, result.algorithm.weights_sha256)
    sop_uid = derived_uid("chestaid", "study-sr", study_uid, str(result.version), *sorted(result.covered), *run)
    series_uid = derived_uid("chestaid", "study-sr", "series", study_uid, *run)
    images = [hd.sr.SourceImageForMeasurementGroup.from_source_image(s) for s in sources]
    groups = finding_groups(sop_uid, result.algorithm, images, result.labels, result.risk, result.decisions,
                            result.thresholds, result.not_analysed)
    groups[0][0].ContentSequence.append(_text(NOTE, (
        f"Study result version {result.version}: {len(result.covered)} instance(s) of the study, "
        f"{0 if result.risk is None else len(sources)} scored; per finding the highest score of the scored images"
        + ("; it supersedes the previous version" if result.previous is not None else ""))[:1024]))
    return report_sr(result.algorithm, groups, sources, series_uid, sop_uid,
                     [result.previous] if result.previous is not None else None,
                     f"chestaid study result v{result.version} (preliminary)")
