"""The study result: one TID 1500 Comprehensive SR per study, referencing every image of it. Its first measurement
groups are the study's findings — per finding the highest score among its read (scored) images and "present" when
any of them was flagged: a finding seen on any frontal image is the patient's, and a repeat PA is usually taken
because the first was worse, so the study is never scored lower than its most telling image. Then each read image's
own findings, and for every image not read (a lateral, a CT scout) or refused, one group saying so and why.
Version N supersedes version N-1 (Predecessor Documents Sequence), so a PACS holds one current result per study."""

from __future__ import annotations

from typing import TYPE_CHECKING

import highdicom as hd
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset

from chestaid.apps.node.results import NOTE, SCHEME, _text, derived_uid, finding_groups, report_sr, results_header

TRIAGE_LEVEL = CodedConcept("TRIAGE", SCHEME, "Triage level under the site's rules")


if TYPE_CHECKING:
    from chestaid.apps.node.result_types import StudyResult


def make_study_sr(result: "StudyResult") -> Dataset:
    sources = [results_header(i.source)[0] for i in result.images]
    study_uid = str(sources[0].StudyInstanceUID)
    run = (result.algorithm.run_name, result.algorithm.weights_sha256)
    sop_uid = derived_uid("chestaid", "study-sr", study_uid, str(result.version), *sorted(result.covered), *run)
    series_uid = derived_uid("chestaid", "study-sr", "series", study_uid, *run)
    images = [hd.sr.SourceImageForMeasurementGroup.from_source_image(s) for s in sources]
    read = [k for k, i in enumerate(result.images) if i.risk is not None]
    groups = finding_groups(sop_uid, result.algorithm, [images[k] for k in read] or images, result.labels,
                            result.risk, result.decisions, result.thresholds, result.not_analysed)
    groups[0][0].ContentSequence.append(_text(NOTE, (
        f"Study result version {result.version}: {len(result.covered)} instance(s) of the study, {len(read)} read; "
        "per finding the highest score of the read images, present when any of them is"
        + ("; it supersedes the previous version" if result.previous is not None else ""))[:1024]))
    if result.triage is not None:  # the level as a coded item, and how it was reached
        t = result.triage
        groups[0][0].ContentSequence.append(hd.sr.CodeContentItem(
            name=TRIAGE_LEVEL, value=CodedConcept(t.level.upper().replace(" ", "_"), SCHEME, f"Triage level {t.level}"),
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
        groups[0][0].ContentSequence.append(_text(NOTE, (
            f"Triage level {t.level} under the site's rules {t.rules}: the findings reached {t.found}"
            + (f" ({', '.join(t.raised)})" if t.raised else "")
            + (f"; the order came with {t.ordered}, never lowered" if t.ordered else "")
            + ("; the likely-normal tier, in shadow, would have lowered it (not applied)"
               if t.shadow_likely_normal else "")
            + (f"; the likely-normal tier is off ({t.tier_off})" if t.tier_off else ""))[:1024]))
    for n, (image, source, ref) in enumerate(zip(result.images, sources, images), 1):
        scope = f" (image {n} of {len(images)})"
        groups += finding_groups(derived_uid(sop_uid, str(source.SOPInstanceUID)), result.algorithm, [ref],
                                 result.labels, image.risk, image.decisions, result.thresholds,
                                 "" if image.risk is not None else f"{image.state}: {image.reason}", scope)
    return report_sr(result.algorithm, groups, sources, series_uid, sop_uid,
                     [result.previous] if result.previous is not None else None,
                     f"chestaid study result v{result.version} (preliminary)")
