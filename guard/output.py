"""From classifier scores to an image action, as the policy pack says.

A pure function: the pack's image threshold per category (lowered for categories the prompt check
found uncertain) and the category's output action decide; a classifier's own `thresholds` and
`action` in the pack override them for its scores; the strictest action wins.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from genguard.guard.errors import PolicyError
from genguard.guard.types import CheckStatus, ClassifierScore, ImageAction, ImageVerdict, PerceivedFace

if TYPE_CHECKING:
    from genguard.guard.policy import PolicyPack


def decide_image(
    scores: Sequence[ClassifierScore],
    pack: PolicyPack,
    *,
    heightened: Collection[str] = (),
    hold_for_review: bool = False,
    observations: Sequence[PerceivedFace] = (),
    checks: Sequence[CheckStatus] = (),
) -> ImageVerdict:
    """The verdict for one image.

    `heightened`: categories whose thresholds drop (the prompt was uncertain about them).
    `hold_for_review`: the prompt policy said review, so the image is withheld whatever it scores.
    `observations`: bias observations, recorded with the verdict; they never change the action.
    `checks`: which of the pack's checks ran and which did not (and why), recorded with the verdict.
    A score from a check listed as not run is an error: the record would contradict itself.
    """
    not_run = {check.classifier for check in checks if not check.ran}
    action = ImageAction.QUARANTINE if hold_for_review else ImageAction.RELEASE
    flagged: list[tuple[str, float]] = []
    for score in scores:
        if score.classifier in not_run:
            raise PolicyError(
                f"image classifier {score.classifier!r} scored an image but is recorded as not run"
            )
        try:
            threshold = pack.classifier_threshold(
                score.classifier, score.category, heightened=score.category in heightened
            )
            category_action = pack.classifier_action(score.classifier, score.category)
        except (KeyError, PolicyError):
            raise PolicyError(
                f"image classifier {score.classifier!r} scored category {score.category!r}, "
                f"which pack {pack.ref.name!r} does not define"
            ) from None
        if score.score >= threshold:
            flagged.append((score.category, threshold))
            if category_action.rank > action.rank:
                action = category_action
    return ImageVerdict(
        action=action,
        scores=tuple(scores),
        flagged=tuple(flagged),
        observations=tuple(observations),
        checks=tuple(checks),
    )
