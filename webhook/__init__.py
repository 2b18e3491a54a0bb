"""The HTTP surface Flagger and Argo Rollouts call, analysis sessions, the store."""
