# Extracts the C program between the readme-example markers of README.md,
# so the test suite compiles and runs exactly what the README shows.
file(READ ${README} text)
string(REGEX MATCH "<!-- readme-example: begin -->\n```c\n(.*)```\n<!-- readme-example: end -->" m "${text}")
if(NOT CMAKE_MATCH_1)
  message(FATAL_ERROR "README.md has no readme-example block")
endif()
file(WRITE ${OUT}.tmp "${CMAKE_MATCH_1}")
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
