# Next-item sequence models: GRU4Rec (models/gru4rec.h) and the sequence trainer
# (worker/seq_trainer.h).
ips_add_test(NAME gru4rec_test SOURCES gru4rec_test.cc LIBS ips_models LABELS unit)
ips_add_test(NAME seq_trainer_test SOURCES seq_trainer_test.cc LIBS ips_worker LABELS unit
             TIMEOUT 240)
if(IPS_WITH_CUDA)
  # GRU4Rec on CUDA against GRU4Rec on the CPU, alone and under the SeqTrainer; skips without a
  # device.
  ips_add_test(NAME gru4rec_gpu_test SOURCES gru4rec_gpu_test.cc LIBS ips_worker LABELS gpu)
endif()
