/* cmd settings: prints every setting as a README-ready Markdown table. */
#include "cmd/cmd.h"

int cmd_settings(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	config_print_reference(stdout);
	return EXIT_OK;
}
