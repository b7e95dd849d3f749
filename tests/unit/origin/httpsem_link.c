/* httpsem_link: builds origin/httpsem.c into the unit-test support archive.
 * The Makefile links unit tests against libcore.a and the publisher's
 * objects only, not the origin's; once it also links the origin's objects
 * (all but main.o), delete this file. */
#include "httpsem.c"
