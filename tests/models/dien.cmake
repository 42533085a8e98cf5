ips_add_test(NAME dien_test SOURCES dien_test.cc LIBS ips_models LABELS unit)
