/* check_dsm_impl.c: placeholder until the suite is written. */
int main(void) { return 77; }
