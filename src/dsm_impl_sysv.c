/* dsm_impl_sysv.c: placeholder, being written. */
#include "dsmkit_int.h"
