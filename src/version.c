/*
 * version.c: the version of the library loaded at run time.
 */
#include "dsmkit_int.h"

#include <dsmkit/version.h>

unsigned int
dsmkit_version(void)
{
	return DSMKIT_VERSION_HEX;
}

const char *
dsmkit_version_string(void)
{
	return DSMKIT_VERSION_STRING;
}
