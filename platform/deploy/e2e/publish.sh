#!/usr/bin/env bash
# CI only (.github/workflows/e2e.yml): commit this checkout's gitops/ to the Git repository Argo CD syncs from
# in the e2e, as a merge to main would. The copy differs from the checkout in two ways only: the rendered
# requests are shrunk to fit the runner (fit_runner.py), and the rendered Argo CD objects point at the served
# repository and branch, with the ApplicationSet limited to the one model under test.
# Usage: publish.sh MESSAGE   (environment: SERVED, GIT_URL, SERVED_BRANCH, MODEL)
set -euo pipefail
message="${1:?usage: publish.sh MESSAGE}"
: "${SERVED:?} ${GIT_URL:?} ${SERVED_BRANCH:?} ${MODEL:?}"
work="${SERVED}/work"
argocd="${work}/gitops/rendered/prod/_argocd"

rm -rf "${work}/gitops"
cp -r gitops "${work}/gitops"
python platform/deploy/e2e/fit_runner.py "${work}/gitops/rendered/prod"
sed -i "s#https://github.com/ferry-ml/ferry.git#${GIT_URL}#g" "${argocd}"/*.yaml
yq -i '.spec.generators[0].git.revision = strenv(SERVED_BRANCH)
       | .spec.generators[0].git.directories = [{"path": "gitops/rendered/prod/" + strenv(MODEL)}]
       | .spec.template.spec.source.targetRevision = strenv(SERVED_BRANCH)' "${argocd}/applicationset.yaml"

git -C "${work}" add -A
git -C "${work}" -c user.name=ferry-e2e -c user.email=e2e@ferry.invalid commit -q -m "${message}"
git -C "${work}" push -q --force "${SERVED}/ferry.git" "HEAD:refs/heads/${SERVED_BRANCH}"
git -C "${work}" log --oneline -1
