# Next-item sequence models: GRU4Rec (models/gru4rec.h) and the sequence trainer
# (worker/seq_trainer.h).
ips_add_test(NAME gru4rec_test SOURCES gru4rec_test.cc LIBS ips_models LABELS unit)
ips_add_test(NAME seq_trainer_test SOURCES seq_trainer_test.cc LIBS ips_worker LABELS unit
             TIMEOUT 240)
