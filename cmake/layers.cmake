# lp_add_layer(NAME DEPS...): a library lp_NAME from every .cpp under src/NAME (recursively).
# Globbing keeps CMakeLists free of per-file edits; CONFIGURE_DEPENDS re-globs when files appear.
# A layer with no sources yet (headers only) becomes an INTERFACE library.
function(lp_add_layer name)
  file(GLOB_RECURSE srcs CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/${name}/*.cpp)
  if(srcs)
    add_library(lp_${name} STATIC ${srcs})
    target_include_directories(lp_${name} PUBLIC ${PROJECT_SOURCE_DIR}/src)
    target_link_libraries(lp_${name} PUBLIC ${ARGN})
  else()
    add_library(lp_${name} INTERFACE)
    target_include_directories(lp_${name} INTERFACE ${PROJECT_SOURCE_DIR}/src)
    target_link_libraries(lp_${name} INTERFACE ${ARGN})
  endif()
endfunction()
