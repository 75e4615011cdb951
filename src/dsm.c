/* dsm.c: placeholder, being written. */
#include "dsmkit_int.h"
