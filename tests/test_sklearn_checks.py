"""scikit-learn's estimator checks over every estimator class of bayesmtl."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from bayesmtl.estimators import MTLClassifier, MTLRegressor


@parametrize_with_checks([MTLRegressor(method="stl"), MTLClassifier(method="stl"),
                          MTLRegressor(method="mtrl", lam=0.5)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
