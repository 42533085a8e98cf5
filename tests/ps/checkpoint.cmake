# Checkpoint files of the embedding store (ps/table_checkpoint.h).
ips_add_test(NAME table_checkpoint_test SOURCES table_checkpoint_test.cc LIBS ips_ps LABELS unit)
