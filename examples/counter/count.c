/*
 * Counter in C: prints 1..COUNT, one number per line, pausing DELAY seconds.
 *
 *   cc -o examples/counter/count examples/counter/count.c
 *   websocketd-py --port=8080 examples/counter/count        # 1..10, every 0.5 s
 *   websocketd-py --port=8080 examples/counter/count 3 0.1  # 1..3, every 0.1 s
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int count = argc > 1 ? atoi(argv[1]) : 10;
    double delay = argc > 2 ? atof(argv[2]) : 0.5;

    for (int i = 1; i <= count; i++) {
        printf("%d\n", i);
        /* stdout is a pipe, so the C library buffers it (up to 4 KiB or
         * more). fflush() sends the line to the client right now. */
        fflush(stdout);
        usleep((useconds_t)(delay * 1000000));
    }
    return 0;
}
