/*
 * `dlotel status` and `dlotel stop` (control_cmd.c): the command line's side of the control
 * socket. |argv| holds the arguments after the command name. Return the process exit code.
 */
#ifndef DLOTEL_LAUNCHER_CONTROL_CMD_H
#define DLOTEL_LAUNCHER_CONTROL_CMD_H

/* Prints the status of this user's daemon (--json: the control protocol's status object). */
int control_cmd_status(int argc, char **argv);

/* Stops this user's daemon (it drains first) and waits until it has exited. */
int control_cmd_stop(int argc, char **argv);

#endif
