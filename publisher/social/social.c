/* social: the table of networks. (Placeholder by the lead so the tree links
 * while x.c and facebook.c are written: the table is empty until they land,
 * and a cross-post job for an unknown network is parked, not lost.) */
#include "social.h"

#include <string.h>

const social_driver *const social_drivers[] = { NULL };

const social_driver *social_driver_find(const char *name)
{
	for (size_t i = 0; social_drivers[i] != NULL; i++)
		if (strcmp(social_drivers[i]->name, name) == 0)
			return social_drivers[i];
	return NULL;
}
