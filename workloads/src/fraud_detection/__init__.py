"""Reference workload ``fraud_detection``: transaction simulator, features and metrics.

The data-science core follows the public handbook "Reproducible Machine Learning
for Credit Card Fraud Detection" (Le Borgne et al.), re-implemented with
vectorised numpy so that the default 1.75-million-transaction dataset can be
generated and featurised in seconds.  See ``simulator``, ``features`` and
``metrics``.
"""
