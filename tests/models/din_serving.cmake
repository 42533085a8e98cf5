# DIN's serving forward (models/din_serving.h) against the model's generic inference forward.
ips_add_test(NAME din_serving_test SOURCES din_serving_test.cc LIBS ips_models LABELS unit)
# The serving Scorer's use of it: fast path vs generic Forward on exported bundles.
ips_add_test(NAME din_serving_scorer_test SOURCES din_serving_scorer_test.cc LIBS ips_worker
             LABELS unit)
