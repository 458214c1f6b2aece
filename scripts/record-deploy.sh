#!/usr/bin/env bash
# CI's deploy record: commit the image pins $OVERLAY now runs (kustomize/overlays/$OVERLAY/images/) back to
# main, so that the overlay in git is what the environment runs. A push that loses a race with another
# commit is rebased and retried. GITHUB_TOKEN pushes start no workflow run.
set -euo pipefail
: "${OVERLAY:?set OVERLAY}"
pins="kustomize/overlays/$OVERLAY/images/kustomization.yaml"
git config user.name "churnops-ci"
git config user.email "churnops-ci@users.noreply.github.com"
git add "$pins"
if git diff --cached --quiet; then
  echo "$OVERLAY already records these images"
  exit 0
fi
git commit --quiet -m "Deploy: $OVERLAY runs the images of ${GITHUB_SHA:0:12}"
for attempt in 1 2 3; do
  # --autostash: the runner's checkout also holds the other overlays' new pins, which are not committed here.
  if git pull --quiet --rebase --autostash origin main && git push --quiet origin HEAD:main; then
    exit 0
  fi
  echo "push attempt $attempt lost a race; retrying" >&2
  sleep $((attempt * 5))
done
exit 1
