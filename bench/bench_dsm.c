/* bench_dsm.c: placeholder. */
#include "benchutil.h"
int main(void) { return 0; }
