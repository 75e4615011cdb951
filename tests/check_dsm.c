/* check_dsm.c: placeholder until the suite is written. */
int main(void) { return 77; }
